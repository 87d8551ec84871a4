"""Capture: frames in. Sources (a webcam, a video file, a folder of images, a stream URL)
read by capture threads that keep only the newest frame (sources.py), several sources
taken in turn (feeds.py), and the pixel keys measured on every captured image
(pixels.py). Gives :class:`~pete_osc.records.Frame` records."""
