"""Tiles: where they go (`layout`) and running a model on them in batches and stitching the outputs
without seams (`runner`)."""
