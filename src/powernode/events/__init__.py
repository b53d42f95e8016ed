"""The fleet event log: the audit trail of every change."""
