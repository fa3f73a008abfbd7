"""Image files for `response_format=url`: signed, expiring, swept."""
