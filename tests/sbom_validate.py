"""Validates an SBOM with an independent implementation: CycloneDX against the
published CycloneDX 1.6 JSON schema (cyclonedx-python-lib ships it), SPDX by
parsing and validating it as SPDX 2.3 with spdx-tools. Prints the problems and
exits 1 when there are any. Usage: python sbom_validate.py spdx|cyclonedx FILE
"""
import sys


def cyclonedx(path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with open(path, encoding="utf-8") as file:
        error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(file.read())
    return [str(error)] if error else []


def spdx(path):
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    document = parse_file(path)
    return [m.validation_message for m in validate_full_spdx_document(document, "SPDX-2.3")]


def main():
    kind, path = sys.argv[1], sys.argv[2]
    problems = {"cyclonedx": cyclonedx, "spdx": spdx}[kind](path)
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
