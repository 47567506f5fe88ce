"""servectl: serve AI models from one declarative YAML spec."""

__version__ = "0.1.0"
