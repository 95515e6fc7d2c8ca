# contrib/nixos/mcp-agent.nix: a NixOS module for mcp-agent, the MCP node
# agent, with the user, ranges, lingering and hardened unit of existing hosts.
#
#   imports = [ ./mcp-agent.nix ];
#   services.mcp-agent = {
#     enable = true;
#     listen = [ "0.0.0.0:9444" ];
#     settings.agent.node = "rift";
#   };
#
# By default the agent runs the layout of existing hosts: the binary at
# /srv/mcp/mcp-agent with its lua/ and policies/ beside it, installed by a
# deploy, not by Nix. Set `package` to run a packaged one instead.
#
# Not evaluated on NixOS where it was written: tests/c/nixos.sh parses it and
# evaluates it against a stub of nixpkgs' lib; see docs/operations.md.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.mcp-agent;
  toml = pkgs.formats.toml { };

  # The uid and gid of user mcp. NEVER change them on a host that has run
  # the agent: rootless Podman keeps its storage, its database paths, the
  # /etc/subuid and /etc/subgid mappings and the user's systemd session by
  # uid, so a new uid sees none of its containers, and the old state is
  # destroyed. The agent records its uid and refuses to run under another.
  uid = 850;
  gid = 850;
  home = "/srv/mcp";
  runtimeDir = "/run/user/${toString uid}";

  exe = if cfg.package == null then "${home}/mcp-agent" else "${cfg.package}/bin/mcp-agent";

  rendered = toml.generate "mcp-agent.toml" (lib.recursiveUpdate {
    agent.data_dir = home;
    api.listen = cfg.listen;
  } cfg.settings);

  configFile = if cfg.configFile == null then rendered else cfg.configFile;
in
{
  options.services.mcp-agent = {
    enable = lib.mkEnableOption "mcp-agent, the MCP node agent";

    package = lib.mkOption {
      type = lib.types.nullOr lib.types.package;
      default = null;
      description = ''
        The package providing bin/mcp-agent. null runs /srv/mcp/mcp-agent, the
        binary a deploy put there (the layout of existing hosts). A package must
        also say where its lua/ and policies/ are: settings.agent.lib_dir.
      '';
    };

    configFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/srv/mcp/mcp-agent.toml";
      description = ''
        The agent's config file, used as it is: settings and listen are then
        ignored. Give a string to keep it out of the Nix store (it may name
        TLS keys). null renders settings and listen to TOML.
      '';
    };

    settings = lib.mkOption {
      type = toml.type;
      default = { };
      example = { agent.node = "rift"; routes.provider = "nginx"; };
      description = ''
        The agent's config (see `mcp-agent config-doc`), rendered to TOML when
        configFile is null. agent.data_dir defaults to /srv/mcp.
      '';
    };

    listen = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "127.0.0.1:9444" ];
      example = [ "0.0.0.0:9444" "[::]:9444" ];
      description = "Addresses of the HTTP API (api.listen), when configFile is null.";
    };

    podmanSocket = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Enable Podman and start its API socket in mcp's user session, where the
        agent looks for it (/run/user/850/podman/podman.sock).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    users.groups.mcp.gid = gid;

    users.users.mcp = {
      # 850 forever: see `uid` above.
      inherit uid home;
      group = "mcp";
      isSystemUser = true;
      description = "MCP agent";
      createHome = true;
      shell = "${pkgs.shadow}/bin/nologin";
      # Rootless Podman maps the ids of containers into these ranges.
      subUidRanges = [ { startUid = 100000; count = 65536; } ];
      subGidRanges = [ { startGid = 100000; count = 65536; } ];
      # To read the journal: its own logs and the containers'.
      extraGroups = [ "systemd-journal" ];
      # The user's systemd (and /run/user/850, and the Podman socket) starts
      # at boot and survives logouts.
      linger = true;
    };

    virtualisation.podman.enable = lib.mkIf cfg.podmanSocket (lib.mkDefault true);

    # podman.socket of the podman package, wanted in mcp's session only.
    systemd.user.sockets.podman = lib.mkIf cfg.podmanSocket {
      wantedBy = [ "sockets.target" ];
      unitConfig.ConditionUser = "mcp";
    };

    systemd.services.mcp-agent = {
      description = "MCP node agent (services as rootless Podman containers)";
      # user@850 creates /run/user/850 and serves the Podman socket.
      after = [ "network-online.target" "user@${toString uid}.service" ];
      wants = [ "network-online.target" "user@${toString uid}.service" ];
      wantedBy = [ "multi-user.target" ];

      environment = {
        HOME = home;
        XDG_RUNTIME_DIR = runtimeDir;
        # Exec health checks and hooks find what the system has installed.
        PATH = lib.mkForce "/run/current-system/sw/bin:/usr/local/bin";
      };

      serviceConfig = {
        # READY=1 once it serves, STATUS= lines, WATCHDOG=1 from its loop.
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = "30s";
        User = "mcp";
        Group = "mcp";
        ExecStart = "${exe} server --config ${configFile}";
        ExecReload = "${pkgs.util-linux}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = 5;

        # The containers run under mcp's Podman service, not in this unit:
        # none of this reaches them. NoNewPrivileges is safe because
        # newuidmap/newgidmap run under that service, never under the agent.
        NoNewPrivileges = true;
        # "strict" would make /run/user/850 read-only, where the agent makes
        # its console socket.
        ProtectSystem = "full";
        # true would hide /run/user, which rootless Podman needs; the home is
        # /srv/mcp, so this exposes nothing.
        ProtectHome = false;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RestrictRealtime = true;
        ReadWritePaths = [ "/srv" ];
      };
    };
  };
}
