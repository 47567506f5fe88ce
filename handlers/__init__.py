"""Example handler modules named by the specs in configs/."""
