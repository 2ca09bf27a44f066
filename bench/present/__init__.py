"""Presentation: terminal tables, the HTML/Markdown report and its plots. No torch."""
