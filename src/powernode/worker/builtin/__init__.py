"""The jobs powernode ships; each module registers one job with `@job`."""
