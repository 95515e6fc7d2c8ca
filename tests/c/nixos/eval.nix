# Evaluates contrib/nixos/mcp-agent.nix the way the NixOS module system
# would, against a stub of the few parts of nixpkgs' lib and pkgs it uses:
# enough to catch a misspelt name or a type error in the module's own code,
# and to see the user and the unit it defines. Not a substitute for NixOS:
# the stub does not know which options NixOS has.
#
#   nix-instantiate --eval --strict --json eval.nix --arg overrides '{ enable = true; }'
{ module ? ../../../contrib/nixos/mcp-agent.nix, overrides ? { } }:
let
  lib = rec {
    mkOption = decl: decl;
    mkEnableOption = what: {
      type = types.bool;
      default = false;
      description = "Whether to enable ${what}.";
    };
    mkIf = cond: content: if cond then content else { };
    mkDefault = v: v;
    mkForce = v: v;
    recursiveUpdate = a: b: a // builtins.mapAttrs (n: v:
      if builtins.isAttrs v && a ? ${n} && builtins.isAttrs a.${n}
      then recursiveUpdate a.${n} v
      else v) b;
    types = {
      bool = "bool"; str = "str"; path = "path"; package = "package";
      listOf = t: "listOf ${t}";
      nullOr = t: "nullOr ${t}";
    };
  };
  # generate: the store path, with what it would hold after a "|", so that a
  # test can read the rendered settings back out of ExecStart.
  pkgs = {
    formats.toml = _: {
      type = "toml";
      generate = name: value: "/nix/store/stub-${name}|${builtins.toJSON value}";
    };
    shadow = "/nix/store/stub-shadow";
    util-linux = "/nix/store/stub-util-linux";
  };
  eval = config: import module { inherit config lib pkgs; };
  declared = (eval { }).options.services.mcp-agent;
  defaults = builtins.mapAttrs (_: o: o.default or null) declared;
  config = { services.mcp-agent = defaults // overrides; };
in
(eval config).config
