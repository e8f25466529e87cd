module github.com/tunrouter/router

go 1.26.8
