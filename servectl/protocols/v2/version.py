"""The one version of a model servectl serves (a reload replaces it in place)."""

VERSION = "1"
