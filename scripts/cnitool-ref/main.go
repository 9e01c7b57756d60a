// cnitool-ref: the benchmark's reference for `cnirun net add|del` (scripts/bench.py builds it
// against Debian's golang-github-appc-cni-dev, offline). It drives libcni the way cnitool
// does: the network list loaded by name from NETCONFPATH, plugins from CNI_PATH, cnitool's
// container ID (derived from the netns path), interface eth0 (or CNI_IFNAME). The result cache
// goes to CNI_CACHE_DIR when set, so a benchmark can keep it out of /var/lib/cni.
//
// Usage: cnitool-ref add|del NETWORK NETNS_PATH
package main

import (
	"context"
	"crypto/sha512"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cnitool-ref:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 || (os.Args[1] != "add" && os.Args[1] != "del") {
		fmt.Fprintln(os.Stderr, "usage: cnitool-ref add|del NETWORK NETNS_PATH")
		os.Exit(2)
	}
	command, name, netns := os.Args[1], os.Args[2], os.Args[3]
	confdir := os.Getenv("NETCONFPATH")
	if confdir == "" {
		confdir = "/etc/cni/net.d"
	}
	list, err := libcni.LoadConfList(confdir, name)
	if err != nil {
		fail(err)
	}
	ifname := os.Getenv("CNI_IFNAME")
	if ifname == "" {
		ifname = "eth0"
	}
	path := filepath.SplitList(os.Getenv("CNI_PATH"))
	cni := libcni.NewCNIConfigWithCacheDir(path, os.Getenv("CNI_CACHE_DIR"), nil)
	runtime := &libcni.RuntimeConf{
		ContainerID: fmt.Sprintf("cnitool-%x", sha512.Sum512([]byte(netns)))[:len("cnitool-")+20],
		NetNS:       netns,
		IfName:      ifname,
	}
	ctx := context.Background()
	if command == "add" {
		result, err := cni.AddNetworkList(ctx, list, runtime)
		if err != nil {
			fail(err)
		}
		if err := result.Print(); err != nil {
			fail(err)
		}
		return
	}
	if err := cni.DelNetworkList(ctx, list, runtime); err != nil {
		fail(err)
	}
}
