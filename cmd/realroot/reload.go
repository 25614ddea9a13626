package main

import (
	"slices"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"realroot/conf"
)

// restartSetting is a restart-only setting: its name and how to give a new
// configuration its running value.
type restartSetting struct {
	name string
	keep func(c *conf.Config, old conf.Config)
}

// restartOnly are the settings a reload cannot change, each with how to
// keep its running value: the listeners, the http.Server's timeouts, the log
// files and the admin listener are set up once, and a root watcher, shared
// across reloads, fixes its checks, warm-up and on-drain command when it is
// built.
var restartOnly = []restartSetting{
	{"listen", func(c *conf.Config, old conf.Config) { c.Listen = old.Listen }},
	{"https-redirect", func(c *conf.Config, old conf.Config) { c.HTTPSRedirect = old.HTTPSRedirect }},
	{"h2c", func(c *conf.Config, old conf.Config) { c.H2C = old.H2C }},
	{"http1-server", func(c *conf.Config, old conf.Config) { c.HTTP1Server = old.HTTP1Server }},
	{"proxy-protocol", func(c *conf.Config, old conf.Config) { c.ProxyProtocol = old.ProxyProtocol }},
	{"header-timeout", func(c *conf.Config, old conf.Config) { c.HeaderTimeout = old.HeaderTimeout }},
	{"idle-timeout", func(c *conf.Config, old conf.Config) { c.IdleTimeout = old.IdleTimeout }},
	{"send-timeout", func(c *conf.Config, old conf.Config) { c.SendTimeout = old.SendTimeout }},
	{"log-file", func(c *conf.Config, old conf.Config) { c.LogFile = old.LogFile }},
	{"access-log-file", func(c *conf.Config, old conf.Config) { c.AccessLogFile = old.AccessLogFile }},
	{"admin", func(c *conf.Config, old conf.Config) { c.Admin = old.Admin }},
	{"admin-allow-remote", func(c *conf.Config, old conf.Config) { c.AdminAllowRemote = old.AdminAllowRemote }},
	{"admin-pprof", func(c *conf.Config, old conf.Config) { c.AdminPprof = old.AdminPprof }},
	{"release-checks", func(c *conf.Config, old conf.Config) { c.ReleaseChecks = old.ReleaseChecks }},
	{"php-user", func(c *conf.Config, old conf.Config) { c.PHPUser = old.PHPUser }},
	{"warm", func(c *conf.Config, old conf.Config) { c.Warm = old.Warm }},
	{"warm-timeout", func(c *conf.Config, old conf.Config) { c.WarmTimeout = old.WarmTimeout }},
	{"warm-failure", func(c *conf.Config, old conf.Config) { c.WarmFailure = old.WarmFailure }},
	{"on-drain", func(c *conf.Config, old conf.Config) { c.OnDrain = old.OnDrain }},
	{"on-drain-timeout", func(c *conf.Config, old conf.Config) { c.OnDrainTimeout = old.OnDrainTimeout }},
}

// keepRestartOnly gives c the running values of the restart-only settings
// it changed, and returns their names, sorted.
func keepRestartOnly(c *conf.Config, old conf.Config) []string {
	var kept []string
	for _, name := range conf.Changed(old, *c) {
		i := slices.IndexFunc(restartOnly, func(s restartSetting) bool { return s.name == name })
		if i >= 0 {
			restartOnly[i].keep(c, old)
			kept = append(kept, name)
		}
	}
	// New certificate files are loaded on reload, but turning TLS on or
	// off changes what the listeners speak.
	if (len(c.TLSCert) == 0) != (len(old.TLSCert) == 0) {
		c.TLSCert, c.TLSKey = old.TLSCert, old.TLSKey
		kept = append(kept, "tls-cert", "tls-key")
		slices.Sort(kept)
	}
	return kept
}

// reloadConfig re-reads the configuration (file, environment, the original
// flags) and swaps it in. An invalid one is rejected: its errors are
// logged and the running one keeps serving.
func (d *daemon) reloadConfig(srv *server) {
	c, err := d.reload()
	if err != nil {
		d.log.Error("reload rejected; the running configuration is kept",
			zap.Strings("errors", strings.Split(err.Error(), "\n")))
		return
	}
	old := srv.config()
	kept := keepRestartOnly(&c, old)
	if len(kept) > 0 {
		d.log.Warn("changing these settings needs a restart; they keep their running values",
			zap.Strings("settings", kept))
	}
	commit, err := d.front.prepare(c) // loads the certificates
	if err != nil {
		d.log.Error("reload rejected; the running configuration is kept",
			zap.Strings("errors", strings.Split(err.Error(), "\n")))
		return
	}
	if err := srv.reload(c); err != nil {
		d.log.Error("reload rejected; the running configuration is kept", zap.Error(err))
		return
	}
	commit()
	// What the reload applied: srv may have kept the root watcher, with
	// its root and poll-interval (a release that failed its warm-up).
	changed := conf.Changed(old, srv.config())
	if lvl, err := zapcore.ParseLevel(c.LogLevel); err == nil {
		d.logs.level.SetLevel(lvl)
	}
	d.log.Info("config reloaded", zap.Strings("changed", changed), zap.String("config", c.File))
}
