#!/bin/sh
# Register this unpacked Few-shot labeler folder with the desktop, for this user only:
# the menu entry, the icon, the .fewshot file type (double-click opens the project in the
# app), the AppStream metadata, and `fewshot` / `fewshot-gui` in ~/.local/bin.
#
#   ./install-linux.sh              # from inside the unpacked folder (it stays where it is)
#   ./install-linux.sh --uninstall  # takes all of that away again (the folder stays)
#
# Nothing needs root; XDG_DATA_HOME and HOME say where things go.
set -eu

ID=io.github.fewshot_labeler.FewShotLabeler
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${XDG_DATA_HOME:-$HOME/.local/share}
BIN=$HOME/.local/bin

refresh() {
    # The desktop reads these caches, not the files: without them the new type and entry
    # appear only after the next log-in. Missing tools only delay that.
    if command -v update-mime-database >/dev/null; then update-mime-database "$DATA/mime"; fi
    if command -v update-desktop-database >/dev/null; then update-desktop-database -q "$DATA/applications"; fi
    if command -v gtk-update-icon-cache >/dev/null && [ -f "$DATA/icons/hicolor/index.theme" ]; then
        gtk-update-icon-cache -q -t "$DATA/icons/hicolor" || true
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    rm -f "$DATA/applications/$ID.desktop" "$DATA/metainfo/$ID.metainfo.xml" "$DATA/mime/packages/$ID.xml"
    rm -f "$DATA"/icons/hicolor/*/apps/"$ID".png "$DATA/icons/hicolor/scalable/apps/$ID.svg"
    for program in fewshot fewshot-gui; do
        # only our own links: a `fewshot` installed by pip stays
        if [ -L "$BIN/$program" ] && [ "$(readlink "$BIN/$program")" = "$HERE/$program" ]; then rm -f "$BIN/$program"; fi
    done
    mkdir -p "$DATA/mime/packages" "$DATA/applications"
    refresh
    echo "removed the Few-shot labeler's menu entry, file type and icons (this folder is untouched)"
    exit 0
fi

if [ ! -x "$HERE/fewshot-gui" ] || [ ! -d "$HERE/share/applications" ]; then
    echo "error: $HERE is not an unpacked Few-shot labeler app folder (no fewshot-gui or share/ beside this script);" \
         "run the install-linux.sh inside the folder you unpacked" >&2
    exit 2
fi
case "$HERE" in
    # & and | would be read by the sed below as its own syntax; % is a field code in Exec lines.
    *[\"\`\$\\\&\|%]*)
        echo "error: the folder's path $HERE contains a quote, backquote, dollar, backslash, &, | or %, which a" \
             "desktop entry cannot launch; move the folder elsewhere and run this again" >&2
        exit 2 ;;
esac

mkdir -p "$DATA/applications" "$DATA/metainfo" "$DATA/mime/packages" "$BIN"
# The entry as shipped runs `fewshot-gui` from PATH; point it at this folder instead, so it
# works whether or not ~/.local/bin is on the desktop session's PATH.
sed -e "s|^Exec=fewshot-gui |Exec=\"$HERE/fewshot-gui\" |" -e "s|^TryExec=fewshot-gui\$|TryExec=$HERE/fewshot-gui|" \
    "$HERE/share/applications/$ID.desktop" > "$DATA/applications/$ID.desktop"
cp "$HERE/share/metainfo/$ID.metainfo.xml" "$DATA/metainfo/"
cp "$HERE/share/mime/packages/$ID.xml" "$DATA/mime/packages/"
(cd "$HERE/share" && find icons -type f) | while read -r icon; do
    mkdir -p "$DATA/$(dirname "$icon")"
    cp "$HERE/share/$icon" "$DATA/$icon"
done
for program in fewshot fewshot-gui; do
    if [ -e "$BIN/$program" ] && [ ! -L "$BIN/$program" ]; then
        echo "note: $BIN/$program exists and is not ours; left as is" >&2
    else
        ln -sfn "$HERE/$program" "$BIN/$program"
    fi
done
refresh
echo "installed: Few-shot labeler is in the applications menu and opens .fewshot files; 'fewshot' is in $BIN"
