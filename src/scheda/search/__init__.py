"""Finding models on the Hub that fit this machine, with what is known of their quality and
speed."""
