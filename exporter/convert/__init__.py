"""Format converters: one function per format, and a table of what each supports."""
