"""Where installed packages keep their data: `<prefix>/share/<package>`, found like ament_index does, on
AMENT_PREFIX_PATH and this interpreter's prefix (which `make setup` lays out as an ament prefix). Code imported
from a checkout reads that checkout's config and checkpoints."""
import os
import sys
from pathlib import Path

SOURCE_TREE = Path(__file__).resolve().parents[1]


def ament_prefixes() -> list[Path]:
    prefixes = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    if Path(sys.prefix) not in prefixes:
        prefixes.append(Path(sys.prefix))
    return prefixes


def find_package_share(package: str) -> Path:
    for prefix in ament_prefixes():
        if (prefix / 'share/ament_index/resource_index/packages' / package).exists():
            return prefix / 'share' / package
    raise LookupError(f'package {package!r} not found on AMENT_PREFIX_PATH (is it installed and sourced?)')


def package_share() -> Path:
    """adawm_planner's own data (launch/, config/, checkpoints/): a checkout's own tree when the package is
    imported from one (so a second checkout or worktree reads its own config), else the installed share."""
    if (SOURCE_TREE / 'package.xml').is_file() and (SOURCE_TREE / 'config').is_dir():
        return SOURCE_TREE
    return find_package_share('adawm_planner')
