"""Test helpers for chronik users and adapter authors (needs pytest)."""
