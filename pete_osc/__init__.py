"""pete_osc: live video to music control through a small vision-language model."""

__version__ = "0.1.0"
