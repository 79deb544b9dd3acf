"""Post-training methods that repair what int8 rounding breaks (issue 18); entry point in a later commit."""
