"""The typed configuration: schema (by section), its Enums of words, checks, ranges, sweep resolvers."""
