"""The arena: battles judged by a person, and the ratings they give."""
