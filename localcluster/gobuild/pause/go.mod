module haven.local/pause

go 1.24
