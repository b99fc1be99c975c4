"""Tests of pipeline.storage: URIs, the local and S3 backends, and the verbs over both."""
