"""The demo app behind `make run`'s route (DEVELOPMENT ONLY): who Vallum says you are."""
