"""Controls as code: the control matrix, the JUnit evidence and the audit report."""
