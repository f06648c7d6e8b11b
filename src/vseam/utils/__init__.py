"""Small shared utilities: atomic file writing, seeding."""
