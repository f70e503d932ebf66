"""Query plans, search-engine crawlers, the polite downloader and the loopback search emulator."""
