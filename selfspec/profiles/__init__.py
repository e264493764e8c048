"""Skip profiles: the JSON schema and its validation, the bundled profiles (bundled/*.json), loading
and publishing them on the Hub, and the search that finds them."""
