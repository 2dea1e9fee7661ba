"""The typed configuration: schema, cross-field checks, ranges, sweep resolvers."""
