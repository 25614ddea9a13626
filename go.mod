module realroot

go 1.26.8

require (
	github.com/fsnotify/fsnotify v1.10.1
	github.com/yookoala/gofast v0.8.0
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
)

require (
	go.uber.org/multierr v1.10.0 // indirect
	golang.org/x/sys v0.13.0 // indirect
	golang.org/x/tools v0.0.0-20200908211811-12e1bf57a112 // indirect
)
