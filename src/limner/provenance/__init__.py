"""Content credentials: C2PA manifests signed into every picture this server answers with,
and the check that reads them back (`POST /v1/content_provenance_checks`)."""
