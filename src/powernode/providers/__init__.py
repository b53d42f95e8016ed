"""Provider accounts and their region, zone and instance-type catalogs."""
