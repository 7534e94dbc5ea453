#!/usr/bin/env bash
# Derives configs/fashion-tri/terms.json, the hint vocabulary of the FashionTri
# dataset (docs/datasets.md), from WordNet 3.0 with the `wn` command of the
# Debian package wordnet.
#
#   scripts/fashiontri_terms.sh > configs/fashion-tri/terms.json
#
# The table below is the editorial part: which lemma (and which of its noun
# senses) each hint term stands for, the noun phrase spoken or written
# ("a T-shirt", "sneakers", "clothing") and whether it is singular, plural or
# a mass noun (the templates agree with it). Everything else, the synset's
# offset, its words, its gloss and its first hypernym, is read from WordNet
# here, so a wrong sense number shows up as a wrong gloss in the output.
#
# Lines:  S|class|term|noun phrase|number|lemma|sense|note    a specific term
#         G|group|classes|note                                an ambiguous group
#         A|group|term|noun phrase|number|lemma|sense|note    a term of that group
# A term that is not itself a WordNet lemma (a compound such as "ankle
# boots") names the lemma it is built on, and its note says how.
set -euo pipefail
command -v wn >/dev/null || { echo "fashiontri_terms.sh: needs wn (apt-get install wordnet)" >&2; exit 1; }

classes='"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"'

table=$(cat <<'EOF'
S|0|T-shirt|a T-shirt|singular|T-shirt|1|
S|0|tee shirt|a tee shirt|singular|tee shirt|1|
S|0|tank top|a tank top|singular|tank top|1|
S|0|camisole|a camisole|singular|camisole|1|
S|1|trousers|trousers|plural|trouser|1|
S|1|pants|pants|plural|trouser|1|the plural of pant, a lemma of the same synset
S|1|slacks|slacks|plural|slacks|1|
S|1|jeans|jeans|plural|jean|1|
S|1|blue jeans|blue jeans|plural|blue jean|1|
S|1|chinos|chinos|plural|chino|1|
S|2|pullover|a pullover|singular|pullover|1|
S|2|sweater|a sweater|singular|sweater|1|
S|2|jumper|a jumper|singular|jumper|3|
S|2|sweatshirt|a sweatshirt|singular|sweatshirt|1|
S|2|turtleneck|a turtleneck|singular|turtleneck|1|
S|3|dress|a dress|singular|dress|1|
S|3|frock|a frock|singular|frock|2|
S|3|gown|a gown|singular|gown|1|
S|3|sundress|a sundress|singular|sundress|1|
S|3|shirtdress|a shirtdress|singular|shirtdress|1|
S|4|coat|a coat|singular|coat|1|
S|4|overcoat|an overcoat|singular|greatcoat|1|
S|4|raincoat|a raincoat|singular|raincoat|1|
S|4|trench coat|a trench coat|singular|trench coat|1|
S|4|jacket|a jacket|singular|jacket|1|
S|5|sandal|a sandal|singular|sandal|1|
S|5|sandals|sandals|plural|sandal|1|
S|5|flip-flops|flip-flops|plural|flip-flop|2|
S|5|espadrilles|espadrilles|plural|espadrille|1|
S|6|dress shirt|a dress shirt|singular|dress shirt|1|
S|6|polo shirt|a polo shirt|singular|polo shirt|1|
S|6|sport shirt|a sport shirt|singular|sport shirt|1|
S|6|work shirt|a work shirt|singular|work-shirt|1|
S|6|blouse|a blouse|singular|blouse|1|
S|7|sneakers|sneakers|plural|sneaker|1|
S|7|tennis shoes|tennis shoes|plural|tennis shoe|1|
S|7|gym shoes|gym shoes|plural|gym shoe|1|
S|7|running shoes|running shoes|plural|running shoe|1|
S|8|bag|a bag|singular|bag|4|
S|8|handbag|a handbag|singular|handbag|1|
S|8|purse|a purse|singular|purse|1|
S|8|shoulder bag|a shoulder bag|singular|shoulder bag|1|
S|8|tote bag|a tote bag|singular|tote bag|1|
S|8|backpack|a backpack|singular|backpack|1|
S|8|clutch bag|a clutch bag|singular|clutch bag|1|
S|9|ankle boots|ankle boots|plural|boot|1|not a WordNet lemma: boot with the modifier ankle, the Fashion-MNIST class name
S|9|boots|boots|plural|boot|1|
S|9|chukka boots|chukka boots|plural|chukka boot|1|
G|footwear/shoe|5,7,9|the issue's group: sandal, sneaker and chukka are hyponyms of shoe in WordNet
A|footwear/shoe|footwear|footwear|mass|footwear|1|
A|footwear/shoe|footgear|footgear|mass|footgear|1|
A|footwear/shoe|shoe|a shoe|singular|shoe|1|
A|footwear/shoe|shoes|shoes|plural|shoe|1|
G|top/shirt/upper-body garment|0,2,4,6|the issue's group: garments for the upper half of the body
A|top/shirt/upper-body garment|top|a top|singular|top|10|
A|top/shirt/upper-body garment|shirt|a shirt|singular|shirt|1|the gloss of shirt is a garment worn on the upper half of the body
A|top/shirt/upper-body garment|upper-body garment|an upper-body garment|singular|shirt|1|not a WordNet lemma: the gloss of shirt, sense 1, as a noun phrase
G|garment/clothing|0,1,2,3,4,5,6|the issue's group: every garment class (classes 0 to 6)
A|garment/clothing|garment|a garment|singular|garment|1|
A|garment/clothing|clothing|clothing|mass|clothing|1|
A|garment/clothing|article of clothing|an article of clothing|singular|article of clothing|1|
A|garment/clothing|clothes|clothes|plural|clothes|1|
A|garment/clothing|apparel|apparel|mass|apparel|1|
G|woman's clothing|0,3|the issue's group: top and dress
A|woman's clothing|woman's clothing|woman's clothing|mass|woman's clothing|1|
A|woman's clothing|women's clothing|women's clothing|mass|woman's clothing|1|not a WordNet lemma: the plural possessive of the lemma woman's clothing
G|outer garment|2,4|the issue's group: coat and pullover
A|outer garment|outer garment|an outer garment|singular|outer garment|1|
A|outer garment|overgarment|an overgarment|singular|overgarment|1|
A|outer garment|outerwear|outerwear|mass|outerwear|1|
G|accessory|5,7,8,9|added for the bag, which no group of the issue covers: the gloss of accessory (clothing that is worn or carried, but not part of your main clothing) fits bags and footwear
A|accessory|accessory|an accessory|singular|accessory|1|
A|accessory|accoutrement|an accoutrement|singular|accoutrement|1|
EOF
)

json_escape() { # stdin -> a JSON string body
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\n'
}

# The noun sense line "N. (count) {offset} words -- (gloss)" of lemma $1, sense $2.
sense_line() {
  local out
  out=$(wn "$1" -over -o || true) # wn exits with a count of senses, not 0
  printf '%s\n' "$out" | awk -v s="$2" '/^Overview of noun/{n=1; next} /^Overview of/{n=0}
    n && index($0, s ". ") == 1 {print; exit}'
}

# The first hypernym "{offset} words" of lemma $1, noun sense $2.
hypernym_line() {
  local out
  out=$(wn "$1" -synsn -o || true)
  printf '%s\n' "$out" | awk -v s="Sense $2" '$0 == s {f=1; next} /^Sense /{f=0}
    f && /=>/ {sub(/^[ \t]*=> /, ""); print; exit}'
}

synset_words() { # "w1, w2" -> ["w1", "w2"]
  local first=1 out="[" w
  IFS=',' read -ra ws <<<"$1"
  for w in "${ws[@]}"; do
    w="${w# }"; w="${w% }"
    [ $first -eq 1 ] || out+=", "
    out+="\"$(printf '%s' "$w" | json_escape)\""
    first=0
  done
  printf '%s]' "$out"
}

term_json() { # term np number lemma sense note
  local term=$1 np=$2 number=$3 lemma=$4 sense=$5 note=$6 line hyp
  line=$(sense_line "$lemma" "$sense")
  if [ -z "$line" ]; then echo "fashiontri_terms.sh: no noun sense $sense of '$lemma' in WordNet" >&2; exit 1; fi
  local offset words gloss
  offset=$(printf '%s' "$line" | sed -E 's/.*\{([0-9]+)\}.*/\1/')
  words=$(printf '%s' "$line" | sed -E 's/^[0-9]+\. (\([0-9]+\) )?\{[0-9]+\} //; s/ -- \(.*$//')
  gloss=$(printf '%s' "$line" | sed -E 's/^.* -- \((.*)\)$/\1/')
  hyp=$(hypernym_line "$lemma" "$sense")
  local hoff hwords
  hoff=$(printf '%s' "$hyp" | sed -E 's/^\{([0-9]+)\}.*/\1/')
  hwords=$(printf '%s' "$hyp" | sed -E 's/^\{[0-9]+\} //')
  printf '        {"text": "%s", "np": "%s", "number": "%s",\n' \
    "$(printf '%s' "$term" | json_escape)" "$(printf '%s' "$np" | json_escape)" "$number"
  printf '         "wordnet": {"lemma": "%s", "sense": %s, "offset": "%s", "synset": %s,\n' \
    "$(printf '%s' "$lemma" | json_escape)" "$sense" "$offset" "$(synset_words "$words")"
  printf '                     "gloss": "%s",\n' "$(printf '%s' "$gloss" | json_escape)"
  printf '                     "hypernym": {"offset": "%s", "synset": %s}' "$hoff" "$(synset_words "$hwords")"
  if [ -n "$note" ]; then printf ',\n                     "note": "%s"' "$(printf '%s' "$note" | json_escape)"; fi
  printf '}}'
}

wnver=$(dpkg-query -W -f '${Version}' wordnet-base 2>/dev/null || echo unknown)

cat <<EOF
{
  "name": "fashion-tri terms",
  "source": {
    "wordnet": "WordNet 3.0, Princeton University (Debian package wordnet-base $wnver), read with the wn command",
    "licence": "WordNet 3.0 license (permissive, BSD-like): https://wordnet.princeton.edu/license-and-commercial-use",
    "script": "scripts/fashiontri_terms.sh",
    "groups": "the ambiguous groups are those of issue 6, plus accessory for the bag"
  },
  "classes": [$classes],
  "templates": [
    {"singular": "{NP}.", "plural": "{NP}.", "mass": "{NP}."},
    {"singular": "A photo of {np}.", "plural": "A photo of {np}.", "mass": "A photo of {np}."},
    {"singular": "This is {np}.", "plural": "These are {np}.", "mass": "This is {np}."},
    {"singular": "It looks like {np}.", "plural": "They look like {np}.", "mass": "It looks like {np}."},
    {"singular": "I see {np}.", "plural": "I see {np}.", "mass": "I see {np}."}
  ],
EOF

# specific terms, by class
printf '  "specific": [\n'
for c in 0 1 2 3 4 5 6 7 8 9; do
  [ "$c" -eq 0 ] || printf ',\n'
  printf '    {"class": %d, "terms": [\n' "$c"
  first=1
  while IFS='|' read -r kind cls term np number lemma sense note; do
    [ "$kind" = S ] && [ "$cls" = "$c" ] || continue
    [ $first -eq 1 ] || printf ',\n'
    term_json "$term" "$np" "$number" "$lemma" "$sense" "$note"
    first=0
  done <<<"$table"
  printf '\n    ]}'
done
printf '\n  ],\n'

# ambiguous groups
printf '  "ambiguous": [\n'
gfirst=1
while IFS='|' read -r kind group cls note; do
  [ "$kind" = G ] || continue
  [ $gfirst -eq 1 ] || printf ',\n'
  gfirst=0
  printf '    {"group": "%s", "classes": [%s],\n     "note": "%s",\n     "terms": [\n' \
    "$(printf '%s' "$group" | json_escape)" "${cls//,/, }" "$(printf '%s' "$note" | json_escape)"
  first=1
  while IFS='|' read -r k2 g2 term np number lemma sense tnote; do
    [ "$k2" = A ] && [ "$g2" = "$group" ] || continue
    [ $first -eq 1 ] || printf ',\n'
    term_json "$term" "$np" "$number" "$lemma" "$sense" "$tnote"
    first=0
  done <<<"$table"
  printf '\n    ]}'
done <<<"$table"
printf '\n  ]\n}\n'
