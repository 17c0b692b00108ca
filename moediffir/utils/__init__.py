"""Shared helpers: atomic file writes, image reading, hashing, seeding and devices."""
