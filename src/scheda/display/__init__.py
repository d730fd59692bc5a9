"""What a person reads: terminal tables, Markdown and charts from finished records, and the
terminal itself.
"""
