"""Data layer: annotation formats, frames and video, the toy-actors generator, datasets."""
