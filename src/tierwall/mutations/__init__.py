"""Mutation testing of the controls: break one promise on purpose, in a scratch copy, and check that
the tests of that control turn red. A control whose tests stay green when it is broken proves nothing."""
