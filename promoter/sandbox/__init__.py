"""A local stand-in for Qlik sites: a real HTTPS QRS per site, for tests, benchmarks and the demo."""
