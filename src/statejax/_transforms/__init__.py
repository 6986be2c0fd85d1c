"""The built-in transforms: plugins, and the private modules they share.

Private: the public spelling of every name here is `statejax.<name>` or
`statejax.transform.<name>`. Three kinds of module live here:

- **Plugins**, one public module per transform family: `jit`, `autodiff`,
  `checking`, `checkpoint`, `vmap`, `mapping`, `loops`, `bounded`, `unvmap`,
  `naming`, `conditionals`, `abstract`, `parallel`, `pmap`. Each registers its
  transforms through the `statejax_register_transforms` hook and the same
  `statejax.extend` API a third party uses; the manager loads them from an internal
  list. A plugin uses another plugin's public names only where one transform is
  defined as another (`vmap2` on `vmap`, `pmap2` on `StatefulMapping`,
  `named_scope` on `jit`).
- **Shared private modules** (a leading underscore), what several plugins share,
  imported by name (their names have no leading underscore; those that do are
  used inside one module only): `_selectors` (the state-selector language and the
  option fields the mapping transforms share), `_lanes` (the lane core of `vmap`,
  `vmap2`, `pmap`), `_loop_core` (the scan core of the loops), `_grad_core` (the
  specs, targets and core of the differentiation transforms), `_state_specs`
  (per-state placement rules of `jit` and `shard_map`), `_common` (small helpers,
  `raise_when`), `_autodiff_types` (the typing of `grad`'s results).
- **Modules that are not plugins** (they register no transform): `stateful`
  (BrainState's `StatefulFunction`, a jaxpr and its states), `find_state`
  (`StateFinder`), `progress` (`ProgressBar`, the loops' progress bars).
"""
