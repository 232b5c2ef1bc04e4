"""Crash-safe resume of a video job: the work folder and its lock, the sealed parts, the journal."""
