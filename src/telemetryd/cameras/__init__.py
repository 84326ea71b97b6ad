"""Cameras: why a picture is missing (the verdict) and the NVR channel view it rests on."""
