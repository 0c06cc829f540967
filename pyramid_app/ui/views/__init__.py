"""View modules of the admin UI, one per area; found by ``config.scan``."""
