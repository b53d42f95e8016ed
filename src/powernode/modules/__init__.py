"""Module versions: specs, template resolution and package merging."""
