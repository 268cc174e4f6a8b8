"""The local EC2 for pipe's tests: moto wrapped so that every instance is a real machine."""
