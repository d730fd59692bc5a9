"""The SQLite stores in the data folder: chat sessions, evaluation runs and comparisons."""
