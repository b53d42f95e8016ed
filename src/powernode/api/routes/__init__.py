"""One thin router per resource: parse, authorize, call the service, commit, shape the output."""
