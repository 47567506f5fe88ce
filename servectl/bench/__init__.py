"""`servectl bench`: load generation, baseline, reports."""
