package main

import (
	"os"

	"github.com/BurntSushi/toml"

	"github.com/tunrouter/router/daemon"
)

// loadSettings loads and resolves a configuration file.
func loadSettings(path string) (*daemon.Settings, []string, error) {
	return daemon.LoadSettings(path)
}

// peekLogSettings reads only [router] log_level and log_format, so that
// the logger exists before the full load reports its errors.
func peekLogSettings(path string) (logSettings, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return logSettings{}, err
	}
	var f struct {
		Router struct {
			LogLevel  string `toml:"log_level"`
			LogFormat string `toml:"log_format"`
		} `toml:"router"`
	}
	if _, err := toml.Decode(string(data), &f); err != nil {
		return logSettings{}, err
	}
	return logSettings{level: f.Router.LogLevel, format: f.Router.LogFormat}, nil
}
