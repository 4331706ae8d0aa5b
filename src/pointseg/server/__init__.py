"""The interactive web app: ``pointseg serve``."""
