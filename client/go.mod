// The agency client module: its only third-party dependency is gopkg.in/yaml.v3, vendored.
module lottery/client

go 1.26

require gopkg.in/yaml.v3 v3.0.1
