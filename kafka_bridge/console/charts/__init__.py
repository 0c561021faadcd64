"""Small charts drawn on the server as inline SVG (svg), and their numbers as text (numbers)."""
