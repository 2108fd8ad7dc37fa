"""The v2 API: notes and chat encrypted end to end by the clients (tierwall_notes_client).

The server stores public keys, assignments and the clients' envelopes; it holds no key that opens
a note or a chat message. Psychologists and clients log in by signing a challenge with their
Ed25519 key and get a short-lived bearer token. See app/README.md, "The v2 API".
"""
