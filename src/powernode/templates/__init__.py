"""Templates: named, ordered sets of module version references."""
