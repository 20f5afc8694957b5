# The ferry native addon: nf_tables batches over netlink and the tamper watch's subscription, libnftables in-process, conntrack deletion over netlink, splice(2)
# forwarding for the userspace proxy, the ebpf mode's loader and map updates (libbpf), and the watch on the host's addresses.
# Built by `cd native && npx --no-install node-gyp rebuild` (scripts/setup); see docs/native.md.
{
  "targets": [
    {
      "target_name": "ferry_native",
      "sources": [
        "src/addon.cc",
        "src/nft.cc",
        "src/nfnl.cc",
        "src/nfnl_monitor.cc",
        "src/conntrack.cc",
        "src/splice.cc",
        "src/bpf.cc",
        "src/route_watch.cc"
      ],
      "include_dirs": [
        "<!@(node -p \"require('node-addon-api').include\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["-Wall", "-Wextra", "<!@(pkg-config --cflags libnftables libmnl libnetfilter_conntrack libbpf)"],
      "cflags_cc": ["-Wall", "-Wextra", "-fexceptions"],
      "libraries": [
        "<!@(pkg-config --libs libnftables libmnl libnetfilter_conntrack libbpf)"
      ]
    }
  ]
}
