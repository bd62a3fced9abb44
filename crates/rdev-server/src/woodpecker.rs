//! Woodpecker CI REST client: find and follow the pipeline for a pushed commit.
